"""The programme console: server-rendered pages for the ministry, provincial offices, TKS and
agencies (issue 19). A fifth process: it reads the four contract topics as a subscriber with its
own principal (like any agency) into its own database, and writes only through the owning
services' HTTP APIs with the signed-in user's short-lived token."""
