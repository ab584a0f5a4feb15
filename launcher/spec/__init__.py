"""The request and its decided form: what the user asked (``LaunchSpec`` from flags, a job YAML,
settings, the recipe and its arguments, the presets) and what the launch decided from it
(``decided.py``). Pure data and parsing; every layer above reads these types. No re-exports, so a
rank that needs ``decided`` never loads the YAML reader."""
