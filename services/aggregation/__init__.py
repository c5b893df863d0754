"""The aggregation service: windowed aggregates of datasets for AGGREGATE grants (see app.py)."""
