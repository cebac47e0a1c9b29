"""Programmes, courses, the municipality register, enrolments with seats and a waitlist."""
