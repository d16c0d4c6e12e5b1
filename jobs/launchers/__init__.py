"""Launchers start a validator for a claimed attempt: inline in this process, or (later) as a job."""
