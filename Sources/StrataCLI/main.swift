import StrataStore
print("strata")
