"""The pipeline: pure transitions, one handler per stage, and the functions-framework entry point."""
