"""Authorization service: data requests, the policy that decides them, and the grant lifecycle; its worker
reads datasets from its own view of pdo.catalog (datasets.py), never from the catalog's tables."""
