"""Django management commands of the tidings integration."""
