"""The engines: pull (sync), push (outbox), and the runtime that wires them to I/O."""
