"""integration.step"""
