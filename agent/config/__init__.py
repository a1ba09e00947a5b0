"""Configuration: YAML with marks -> validated frozen models; checks, words, profiles, schemas.

Imports agent.core, agent.transport and drivers (each driver's own config model).
"""
