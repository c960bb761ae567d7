"""celeriac's web dashboard, HTTP API and Prometheus metrics (`celeriac -A tasks dashboard`).

Needs the optional extra: pip install 'celeriac[dashboard]'.
"""
