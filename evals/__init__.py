"""Evaluations: IQA correlations, LLVisionQA, LLDescribe, and joint score + explanation reports."""
