print("authz")
