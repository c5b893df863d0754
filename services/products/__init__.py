"""Derived data products: declared in products/*.yaml, registered in the catalog, computed by the aggregation worker."""
