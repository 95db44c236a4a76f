"""simnet: local clusters of real p2pgrid nodes, real profiles, faults, KPIs and reports."""
