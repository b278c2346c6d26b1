"""The study: its plan (runs and paths) and its steps (one function per pipeline step)."""
