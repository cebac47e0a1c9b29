"""Certificates for participants who attended every module: PDF, signed credential, verification."""
