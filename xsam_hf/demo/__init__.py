"""The X-SAM web demo (`xsam demo`, needs the `demo` extra): see `app.py` and README.md in this folder."""
