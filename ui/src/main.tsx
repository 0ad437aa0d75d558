import '@mantine/core/styles.css';
import { createTheme, MantineProvider } from '@mantine/core';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { Root } from './App';

const theme = createTheme({ primaryColor: 'teal', defaultRadius: 'sm' });
const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <MantineProvider theme={theme} defaultColorScheme="light">
        <Root />
      </MantineProvider>
    </StrictMode>,
  );
}
