from flamepy_runner import Runner

def sum_fn(a: int, b: int) -> int:
    return a + b

with Runner("sum-app") as runner:
    sum_service = runner.service(sum_fn)
    result = sum_service(1, 3)
    print(result.get())
