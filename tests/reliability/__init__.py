"""The long runs that hold mountfs to load, faults and hostile input (`make soak`, `make chaos`,
`make crash`, `make fuzz`), and the RELIABILITY.md table they write."""
