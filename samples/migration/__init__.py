"""The migration walk-through: a WCF Relay app.config for the Calculator, its migrated outputs, and a host."""
