"""Layer 3, the embedded default data: a synthetic chest CT phantom with COVID-19-CT-Seg labels."""
