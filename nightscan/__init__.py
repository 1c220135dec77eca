"""nightscan."""
