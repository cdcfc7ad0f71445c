// lag-exporter page
