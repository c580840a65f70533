"""Hello, Corral: a stateful class, run on the embedded cluster.

    corral run examples/hello.py          # or: python examples/hello.py
"""

import corral

app = corral.App("hello")


@app.cls()
class Greeter:
    greeting: str = corral.parameter(default="Hello")

    @corral.enter()
    def start(self):
        self.count = 0

    @corral.method()
    def greet(self, name: str) -> str:
        self.count += 1
        return f"{self.greeting}, {name}! (call {self.count} in this container)"


@app.local_entrypoint()
def main(name: str = "world"):
    greeter = Greeter()
    print(greeter.greet.remote(name))
    print(greeter.greet.remote(name))
    print(Greeter(greeting="Bonjour").greet.remote(name))


if __name__ == "__main__":
    with app.run():
        main()
