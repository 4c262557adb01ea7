from flamepy_runner import Runner

def double(value: int) -> int:
    return value * 2

def add(a: int, b: int) -> int:
    return a + b

with Runner("chain-app") as runner:
    double_service = runner.service(double)
    add_service = runner.service(add)

    first = double_service(21)
    total = add_service(first, 8)
    print(total.get())
