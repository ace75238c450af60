"""What `bench` runs: suites, verification, measurement and performance benchmarks."""
