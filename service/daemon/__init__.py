"""The long-running daemon: scheduler, health and metrics server, graceful shutdown."""
