"""Metric sources and the judge: is the new release within its ceilings?"""
