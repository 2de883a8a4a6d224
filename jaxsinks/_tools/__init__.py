"""Tools around the library: the command line (`cli`), plots and movies (`viz`) and the storage
benchmark (`bench`). `import jaxsinks` never imports this package (tests/test_layers.py).
"""
