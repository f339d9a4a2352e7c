"""The search application: index a sound folder, search it by text, serve it, tag files zero-shot."""
