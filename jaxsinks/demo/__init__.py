"""Physics for the jaxsinks demos: pure JAX, no recording (see `jaxsinks.demo.lj`)."""
