"""What the benchmarks share (bench/flow.py, bench/scale.py, bench/floor.py): the database,
people and server they run against (`fixtures`, on tests/harness.py), the HTTP clients, one
flow as a client runs it, the load phases, what they measure and how it is printed."""
