"""policies.block"""
