"""dml_core."""
