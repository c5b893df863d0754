"""One file per migration; each later issue adds its tables here as a new revision."""
