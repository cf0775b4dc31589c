"""Shared infrastructure of oms: settings, logging, database, gRPC serving, Temporal, CLI."""
