# escape=`
FROM mcr.microsoft.com/windows/servercore:ltsc2022 `
    AS base
RUN dir C:\ `
    && echo done
COPY --from=mcr.microsoft.com/powershell:lts-nanoserver-ltsc2022 C:\pwsh C:\pwsh
