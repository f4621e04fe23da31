"""The generated model file's Jinja2 template and the live viewer page."""
