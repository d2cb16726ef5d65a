"""Data aggregation (数据汇聚): reading city models, BIM and survey data into the CIM database."""
