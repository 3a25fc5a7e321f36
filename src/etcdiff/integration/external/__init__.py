"""integration.external"""
