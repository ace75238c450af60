"""Methods. Importing this package registers every method with `bench.registry`."""
