"""The embedded dev stack: Postgres and Temporal from wheels, supervised with the services."""
