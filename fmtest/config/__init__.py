"""The suite config: its schema (`schema`, every key once), the parsed file (`suite`), where it is found
(`lookup`), the run's resolved settings (`settings`) and the rules every verdict is judged by (`rules`)."""
