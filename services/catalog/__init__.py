"""Catalog service: providers register, update and retire datasets; kept in SQL and on the catalog topic."""
