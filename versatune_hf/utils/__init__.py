"""Small shared helpers: durable JSON-lines files and plots."""
