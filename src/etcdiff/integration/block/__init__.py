"""integration.block"""
