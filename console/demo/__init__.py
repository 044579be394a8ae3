"""The local sandbox behind ``bgconsole demo``: two hosts, SSH, Redis, agent and traffic."""
