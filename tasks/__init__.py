"""Thin Prefect tasks over the tomopt_lib cores; they take and return file paths and scalars."""
