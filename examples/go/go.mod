module rawblock.example/go

go 1.19
