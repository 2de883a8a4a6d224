"""Reading a recorded run back: `jaxsinks.open` gives a `Run` whose fields index like numpy and
read only what is asked for, from any location a sink can write.
"""
