"""policies.step"""
