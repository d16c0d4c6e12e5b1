"""The MAINTAIN stage (DESIGN §13): its pure transitions and its sweeps, run on the maintenance tick."""
