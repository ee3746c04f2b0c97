"""Local development stack: real NATS and PostgreSQL servers run as subprocesses."""
