"""Brand-sentiment reports: data, charts, HTML/PDF/CSV rendering and delivery."""
